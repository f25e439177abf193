"""Quality metrics: FID/KID and Inception Score, and the feature cache they share with the
curator."""
