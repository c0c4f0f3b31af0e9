"""The pieces of the ``lorax`` command line (see :mod:`lorax.cli`).

``common`` holds the options every subcommand shares, how they become a client, and
how errors are reported; each other module is one subcommand. The batch
engine (:func:`lorax.batch.run_batch`) is usable from Python as well.
"""
