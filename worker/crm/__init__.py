"""CRM integrations: reading records back from the CRMs' APIs."""
