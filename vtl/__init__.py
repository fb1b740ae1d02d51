"""Virtual tape library: cartridge store, SCSI device models and their transports."""
