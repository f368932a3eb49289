"""Search: enumerate candidate plans (space), score them in vectorised chunks (score), choose and explain (optimize)."""
