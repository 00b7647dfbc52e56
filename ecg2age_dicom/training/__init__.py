"""Training and evaluation of the default model (ECG2Age-PTBXL) on the project's shared ECGs.

``data`` loads the packaged PTB-XL / CODE-15% arrays, ``network`` defines the model and its
fixed 500 -> 100 Hz front-end, ``train`` fits and exports it, ``evaluate`` measures it through
the serving path and writes the card's metrics and plots.
"""
