"""Stories: tokenisers, the SeqGAN networks, the text generator and the story strip."""
