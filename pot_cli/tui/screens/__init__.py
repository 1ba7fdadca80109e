"""The dashboard's screens (the help screen; the tabs live on the app's main screen)."""
