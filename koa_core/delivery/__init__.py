"""DICOM results back to the PACS: structured report, secondary capture, delivery, ledger.

``findings`` is the input contract (one film's knees, the algorithm, the overlay picture);
``report`` and ``capture`` build the SR and the Secondary Capture; ``uids`` derives their
UIDs; ``destinations`` sends one instance (STOW-RS or an outbox folder); ``deliver`` ties
them together and records every outcome in the ``deliveries`` table (``ledger``).
"""
