"""The front door (the hub service `home`): labs/home/app.py."""
