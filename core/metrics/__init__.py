"""Quality metrics: FID/KID and Inception Score, and the sharded feature store they share with the
curator."""
