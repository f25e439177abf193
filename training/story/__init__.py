"""Training the SeqGAN text generator (MLE, discriminator, policy gradient)."""
