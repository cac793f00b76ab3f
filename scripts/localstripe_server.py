"""`localstripe --port N [--from-scratch]` with its store in the file MB_LOCALSTRIPE_STORE names.

localstripe keeps its data in one fixed file, /tmp/localstripe.pickle, which every instance on the
machine would share (and overwrite). This points the store at a file of its own, so that `make run`
keeps the demo's customers and cards under var/ across restarts, and each test's server keeps its
own (tests/stripe_server.py). The store is written on every change.

Run as a script (`python scripts/localstripe_server.py --port 8420`), not imported: this file must
not be named localstripe.py, or it would import itself.
"""

import os
import pickle
import sys

from localstripe import resources, server

PATH = os.environ["MB_LOCALSTRIPE_STORE"]


def load(store):
    try:
        with open(PATH, "rb") as f:
            saved = pickle.load(f)
    except FileNotFoundError:
        return
    store.clear()
    store.update(saved)


def dump(store):
    with open(PATH + ".new", "wb") as f:
        pickle.dump(store, f, protocol=pickle.HIGHEST_PROTOCOL)
    os.replace(PATH + ".new", PATH)


if __name__ == "__main__":
    resources.Store.try_load_from_disk = load
    resources.Store.dump_to_disk = dump
    sys.argv[0] = "localstripe"
    sys.exit(server.start())
