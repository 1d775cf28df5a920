"""This machine: its inventory (what it has) and the adaptation plan (what an
environment gets here)."""
