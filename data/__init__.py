"""The course data (see README.md here); packaged as ftlab.shipped.data so a wheel carries it."""
