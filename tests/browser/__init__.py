"""Headless-Chromium helpers for tests/test_browser.py (and the README screenshot script)."""
