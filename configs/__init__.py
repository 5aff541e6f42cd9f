"""Run, accelerate and model-shape configs; packaged as ftlab.shipped.configs so a wheel carries them."""
