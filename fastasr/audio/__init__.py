"""Audio in, torch-free: reading files (decode, downmix, resample, cut long recordings, batch them for any
recogniser) and the NumPy log-mel. Shared by the loader, inference and the ONNX runtime."""

# Sample rates a file may claim (Hz): telephone speech is 8 kHz, studio masters 192 kHz. A header outside is not
# trusted: at 1 Hz a 32 KB WAV claims nine hours, which resampling to 16 kHz would allocate. Checked where a file
# is opened (fastasr.audio.files for transcription, fastasr.corpus for shards), here so both share one range.
SAMPLE_RATES = (1_000, 192_000)
