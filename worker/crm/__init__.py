"""CRM integrations: the field mappings (``crm/hubspot.yaml``, ``crm/pipedrive.yaml``) that
turn a CRM's webhooks into lead events (applied by :mod:`worker.http.adapters`), and
reading records back from the CRMs' APIs."""
