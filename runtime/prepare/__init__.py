"""Model preparation: turn a manifest's source into checked, ready-to-load files in the model cache.

Nothing here runs at kiosk start: `kiosk models prepare` does the work once and
records what it produced; loading only checks that record.
"""
