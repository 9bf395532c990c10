"""Prices: what a replica's lifecycle costs under each pricing kind."""
