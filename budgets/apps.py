from django.apps import AppConfig


class BudgetsConfig(AppConfig):
    name = "budgets"
    verbose_name = "Budgets and alerts"

    def ready(self) -> None:
        # Ingestion (usage/) reports each batch's spend through usage.recording; budgets follow it.
        from usage.recording import spend_recorder_install

        from .spend import SpendRecording

        spend_recorder_install(SpendRecording)

        # Prepaid-only plans stop at the credit balance: its cached hard limits follow the balance.
        from billing.credits import balance_changed_hooks

        from .counters import limits_changed

        balance_changed_hooks.append(limits_changed)
