"""What the scheduler process does each tick, one small module each (see scheduler.py)."""
