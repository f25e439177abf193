"""What every part shares: state dicts and safe writing, output paths, progress, colours,
plots, batching, Hugging Face folders and the optional bitsandbytes check."""
