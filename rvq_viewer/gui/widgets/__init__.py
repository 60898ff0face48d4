"""Widgets and helpers the panels share: colours and labels, the usage curve, point picking, the banner."""
