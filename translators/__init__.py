"""Translators: one module per application, loaded through the ebm.translators entry points."""
