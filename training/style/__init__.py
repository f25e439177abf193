"""Training the AdaIN decoder."""
