"""One module per `kiosk` sub-command family; runtime/cli.py assembles them lazily."""
