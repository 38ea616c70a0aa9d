"""Small utilities shared by detpre's tools."""
