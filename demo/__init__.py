"""The demo workspace behind `manage.py seed_demo` (and `make run`): its accounts (accounts.py), its
synthetic traffic (traffic.py), and the seeding that sends it through ingestion, closes its past
months and gives it a budget (seed.py). The top of the stack: it may use every other app."""
