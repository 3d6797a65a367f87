"""One module per tab. Each tab posts messages up to the app and receives state as attributes from it."""
