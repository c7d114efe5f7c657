"""Paper figures from the metrics and CSVs that earlier stages wrote."""
