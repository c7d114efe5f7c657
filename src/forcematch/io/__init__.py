"""Files: H5MD datasets, atomic writes, provenance, model directories."""
