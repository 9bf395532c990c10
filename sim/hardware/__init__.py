"""What one replica can hold and how fast it runs: the KV-cache memory plan and the performance
models.
"""
