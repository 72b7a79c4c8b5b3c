//! Named reply codes: those ftpfront sends itself, and those of a backend it acts on (RFC 959 4.2 names where they exist).

// ---- 1xx, 2xx: positive replies ----

/// 120 Service ready in nnn minutes (a backend's greeting that precedes its 220).
pub const SERVICE_READY_IN: u16 = 120;
/// 200 Command okay.
pub const COMMAND_OK: u16 = 200;
/// 211 System status, or system help reply (FEAT's reply, RFC 2389).
pub const SYSTEM_STATUS: u16 = 211;
/// 213 File status (STAT during a transfer).
pub const FILE_STATUS: u16 = 213;
/// 214 Help message.
pub const HELP_MESSAGE: u16 = 214;
/// 220 Service ready for new user.
pub const SERVICE_READY: u16 = 220;
/// 221 Service closing control connection.
pub const CLOSING_CONTROL: u16 = 221;
/// 226 Closing data connection; requested file action successful.
pub const CLOSING_DATA: u16 = 226;
/// 227 Entering Passive Mode (h1,h2,h3,h4,p1,p2).
pub const ENTERING_PASSIVE: u16 = 227;
/// 229 Entering Extended Passive Mode (|||port|) (RFC 2428).
pub const ENTERING_EXTENDED_PASSIVE: u16 = 229;
/// 230 User logged in, proceed.
pub const LOGGED_IN: u16 = 230;
/// 234 AUTH accepted: start the security exchange (RFC 2228, RFC 4217 4.1).
pub const AUTH_OK: u16 = 234;
/// 257 "PATHNAME" created (also PWD's answer).
pub const PATHNAME_CREATED: u16 = 257;

// ---- 3xx: positive intermediate replies ----

/// 331 User name okay, need password.
pub const NEED_PASSWORD: u16 = 331;
/// 332 Need account for login.
pub const NEED_ACCOUNT: u16 = 332;
/// 350 Requested file action pending further information (REST, RNFR).
pub const FILE_ACTION_PENDING: u16 = 350;

// ---- 4xx: transient negative replies ----

/// 421 Service not available, closing control connection.
pub const SERVICE_NOT_AVAILABLE: u16 = 421;
/// 425 Can't open data connection.
pub const CANT_OPEN_DATA: u16 = 425;
/// 426 Connection closed; transfer aborted.
pub const TRANSFER_ABORTED: u16 = 426;
/// 451 Requested action aborted: local error in processing.
pub const LOCAL_ERROR: u16 = 451;

// ---- 5xx: permanent negative replies ----

/// 500 Syntax error, command unrecognized.
pub const SYNTAX_ERROR: u16 = 500;
/// 501 Syntax error in parameters or arguments.
pub const SYNTAX_ERROR_ARGS: u16 = 501;
/// 502 Command not implemented.
pub const NOT_IMPLEMENTED: u16 = 502;
/// 503 Bad sequence of commands.
pub const BAD_SEQUENCE: u16 = 503;
/// 504 Command not implemented for that parameter.
pub const NOT_IMPLEMENTED_PARAM: u16 = 504;
/// 521 Data connection cannot be opened with this PROT setting (RFC 4217 9).
pub const PROT_SETTING_REFUSED: u16 = 521;
/// 522 Network protocol not supported (RFC 2428 2 and 3).
pub const PROTOCOL_NOT_SUPPORTED: u16 = 522;
/// 530 Not logged in.
pub const NOT_LOGGED_IN: u16 = 530;
/// 533 Command protection level denied for policy reasons (RFC 2228; CCC).
pub const PROTECTION_DENIED: u16 = 533;
/// 536 Requested PROT level not supported by mechanism (RFC 2228).
pub const PROT_LEVEL_NOT_SUPPORTED: u16 = 536;
