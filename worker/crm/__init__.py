"""CRM field mappings (``crm/hubspot.yaml``, ``crm/pipedrive.yaml``): how a CRM's
webhooks become lead events. Loaded and checked here; applied by
:mod:`worker.http.adapters`."""
