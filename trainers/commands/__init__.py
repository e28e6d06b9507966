"""The file-in/file-out work behind the inference commands: magvit2-tokenize, magvit2-reconstruct, magvit2-generate."""
