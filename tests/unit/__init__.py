"""Tests that need no server: pure functions, parsing, the layout and docs rules read from source."""
