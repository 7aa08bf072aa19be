"""Audio in, torch-free: reading files (decode, downmix, resample, cut long recordings, batch them for any
recogniser) and the NumPy log-mel. Shared by the loader, inference and the ONNX runtime."""
