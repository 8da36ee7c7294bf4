"""Super-resolution on top of the degrader: the Low-to-High GAN (paper sections 3.4-3.6)."""
