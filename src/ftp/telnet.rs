//! The Telnet bytes (RFC 854) that reach an FTP control connection around urgent commands such as ABOR.

/// "Interpret As Command": the escape byte that starts every Telnet command.
pub const IAC: u8 = 0xFF;
/// "Data Mark", the end of a Synch; arrives without its IAC when the IAC went out-of-band.
pub const DM: u8 = 0xF2;
/// "Interrupt Process"; arrives bare when its IAC went out-of-band.
pub const IP: u8 = 0xF4;
