"""Stories: tokenisers, the SeqGAN networks, the text generator, the story strip and the panel guides."""
