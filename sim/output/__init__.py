"""Files and pictures: the only matplotlib user."""
