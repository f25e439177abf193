"""Style transfer: the AdaIN networks, feature transfer (AdaIN, EFDM), colour preservation,
stylizing and style augmentation (virtual training pictures)."""
