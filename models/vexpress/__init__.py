"""V-Express-compatible modules (ReferenceNet, denoising 3D UNet, V-Kps guider, audio projection) and the
loading of the published checkpoint files. See docs/vexpress.md."""
