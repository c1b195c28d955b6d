"""The domain model at the centre: codes, schemas, reasons, topology."""
