"""The app's screens. Each does its database work in thread workers that only post messages."""
