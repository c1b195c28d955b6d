"""Wire formats: the collector binary frame and the canonical CSVs."""
