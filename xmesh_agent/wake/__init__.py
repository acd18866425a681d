"""The steps of a wake as plain domain code; `activities/` adapts them to Temporal."""
