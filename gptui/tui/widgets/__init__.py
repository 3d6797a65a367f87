"""Reusable widgets: the loss plot, a form field generated from a setting, and the modal dialogs."""
