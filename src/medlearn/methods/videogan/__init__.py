"""VideoGAN: video-to-video domain adaptation of endoscopy videos (Chen et al., AAAI 2020)."""
