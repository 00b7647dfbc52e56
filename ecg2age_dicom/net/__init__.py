"""The DICOM network edges: :mod:`.scp` receives ECGs, :mod:`.scu` sends reports, over the
bounded sockets of :mod:`.sockets`. Neither decodes a waveform."""
