"""NATS clients that connect through entra-callout with Microsoft Entra access tokens.

- :mod:`entra_nats.credentials`: where the access token comes from (``azure-identity`` in Azure;
  ``entra-callout dev token`` locally), chosen by the ``ENTRA_NATS_CREDENTIAL`` variable.
- :mod:`entra_nats.client`: :class:`~entra_nats.client.RotatingClient`, a nats-py wrapper that
  replaces its connection with a fresh token before the minted NATS credentials expire, and
  again after nats-server has closed it (nats-py 2.x gives up for good after
  ``User Authentication Expired``).
- :mod:`entra_nats.ml`: the ML events scenario (subjects and payloads), shared by
  ``python -m entra_nats.publisher`` and ``python -m entra_nats.consumer``.
"""
