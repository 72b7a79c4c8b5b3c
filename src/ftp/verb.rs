//! The verb table: every verb ftpfront knows (`define_verbs!`), its wire name and metric label, and transfer directions.

/// Defines [`Verb`] and its name tables from one list, so the enum, the wire
/// names and the metric labels can never drift apart.
macro_rules! define_verbs {
    ($($variant:ident => $name:literal, $label:literal;)+) => {
        /// A command verb. Verbs the proxy does not know are [`Verb::Other`];
        /// their spelling is kept in [`Command::verb_text`](super::Command::verb_text).
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum Verb {
            $(
                #[doc = concat!("`", $name, "`")]
                $variant,
            )+
            /// Any verb not listed above.
            Other,
        }

        impl Verb {
            /// Every verb except [`Verb::Other`].
            pub const KNOWN: &'static [Verb] = &[$(Verb::$variant),+];

            /// The verb as written on the wire (uppercase); `"OTHER"` for [`Verb::Other`].
            pub fn name(self) -> &'static str {
                match self {
                    $(Verb::$variant => $name,)+
                    Verb::Other => "OTHER",
                }
            }

            /// Lowercase name for metrics. Unknown verbs all map to `"other"`
            /// so a client cannot blow up label cardinality.
            pub fn metric_label(self) -> &'static str {
                match self {
                    $(Verb::$variant => $label,)+
                    Verb::Other => "other",
                }
            }
        }
    };
}

define_verbs! {
    User => "USER", "user";
    Pass => "PASS", "pass";
    Acct => "ACCT", "acct";
    Quit => "QUIT", "quit";
    Rein => "REIN", "rein";
    Port => "PORT", "port";
    Eprt => "EPRT", "eprt";
    Pasv => "PASV", "pasv";
    Epsv => "EPSV", "epsv";
    Lprt => "LPRT", "lprt";
    Lpsv => "LPSV", "lpsv";
    Auth => "AUTH", "auth";
    Pbsz => "PBSZ", "pbsz";
    Prot => "PROT", "prot";
    Ccc => "CCC", "ccc";
    Adat => "ADAT", "adat";
    Feat => "FEAT", "feat";
    Opts => "OPTS", "opts";
    Syst => "SYST", "syst";
    Noop => "NOOP", "noop";
    Help => "HELP", "help";
    Host => "HOST", "host";
    Pret => "PRET", "pret";
    Retr => "RETR", "retr";
    Stor => "STOR", "stor";
    Stou => "STOU", "stou";
    Appe => "APPE", "appe";
    List => "LIST", "list";
    Nlst => "NLST", "nlst";
    Mlsd => "MLSD", "mlsd";
    Mlst => "MLST", "mlst";
    Rest => "REST", "rest";
    Abor => "ABOR", "abor";
    Stat => "STAT", "stat";
    Type => "TYPE", "type";
    Mode => "MODE", "mode";
    Stru => "STRU", "stru";
    Allo => "ALLO", "allo";
    Cwd => "CWD", "cwd";
    Cdup => "CDUP", "cdup";
    Pwd => "PWD", "pwd";
    Mkd => "MKD", "mkd";
    Rmd => "RMD", "rmd";
    Dele => "DELE", "dele";
    Rnfr => "RNFR", "rnfr";
    Rnto => "RNTO", "rnto";
    Size => "SIZE", "size";
    Mdtm => "MDTM", "mdtm";
    Mfmt => "MFMT", "mfmt";
    Site => "SITE", "site";
    Smnt => "SMNT", "smnt";
    Clnt => "CLNT", "clnt";
    Lang => "LANG", "lang";
    Xcwd => "XCWD", "xcwd";
    Xcup => "XCUP", "xcup";
    Xpwd => "XPWD", "xpwd";
    Xmkd => "XMKD", "xmkd";
    Xrmd => "XRMD", "xrmd";
}

impl Verb {
    /// Looks a verb up case-insensitively; anything unknown is [`Verb::Other`].
    pub fn from_name(name: &str) -> Verb {
        Verb::KNOWN
            .iter()
            .copied()
            .find(|verb| verb.name().eq_ignore_ascii_case(name))
            .unwrap_or(Verb::Other)
    }

    /// Whether the command moves data over a data connection.
    pub fn is_transfer(self) -> bool {
        self.transfer_direction().is_some()
    }

    /// Which way a transfer command moves data; `None` for non-transfer verbs.
    pub fn transfer_direction(self) -> Option<TransferDirection> {
        match self {
            Verb::Retr => Some(TransferDirection::Download),
            Verb::Stor | Verb::Stou | Verb::Appe => Some(TransferDirection::Upload),
            Verb::List | Verb::Nlst | Verb::Mlsd => Some(TransferDirection::Listing),
            _ => None,
        }
    }
}

/// Direction of a data transfer, from the client's point of view.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TransferDirection {
    Download,
    Upload,
    Listing,
}

impl TransferDirection {
    /// Lowercase name, suitable as a metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            TransferDirection::Download => "download",
            TransferDirection::Upload => "upload",
            TransferDirection::Listing => "listing",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // ---- Verb ----

    #[test]
    fn from_name_is_case_insensitive() {
        assert_eq!(Verb::from_name("retr"), Verb::Retr);
        assert_eq!(Verb::from_name("ReTr"), Verb::Retr);
        assert_eq!(Verb::from_name("XMKD"), Verb::Xmkd);
    }

    #[test]
    fn from_name_maps_unknown_to_other() {
        assert_eq!(Verb::from_name("FOO"), Verb::Other);
        assert_eq!(Verb::from_name(""), Verb::Other);
        assert_eq!(Verb::from_name("OTHER"), Verb::Other);
        assert_eq!(Verb::from_name("RETR "), Verb::Other);
    }

    #[test]
    fn every_known_verb_round_trips_through_its_name() {
        assert_eq!(Verb::KNOWN.len(), 58);
        for &verb in Verb::KNOWN {
            assert_eq!(Verb::from_name(verb.name()), verb);
            assert_eq!(verb.metric_label(), verb.name().to_ascii_lowercase());
        }
    }

    #[test]
    fn other_has_fixed_labels() {
        assert_eq!(Verb::Other.metric_label(), "other");
        assert_eq!(Verb::Other.name(), "OTHER");
        assert_eq!(Verb::Retr.metric_label(), "retr");
    }

    #[test]
    fn transfer_directions() {
        use TransferDirection::*;
        assert_eq!(Verb::Retr.transfer_direction(), Some(Download));
        for verb in [Verb::Stor, Verb::Stou, Verb::Appe] {
            assert_eq!(verb.transfer_direction(), Some(Upload));
        }
        for verb in [Verb::List, Verb::Nlst, Verb::Mlsd] {
            assert_eq!(verb.transfer_direction(), Some(Listing));
        }
        for verb in [Verb::Mlst, Verb::Stat, Verb::Pasv, Verb::Other] {
            assert_eq!(verb.transfer_direction(), None);
        }
    }

    #[test]
    fn is_transfer_matches_exactly_the_seven_transfer_verbs() {
        let transfers: Vec<Verb> = Verb::KNOWN
            .iter()
            .copied()
            .filter(|v| v.is_transfer())
            .collect();
        use Verb::*;
        assert_eq!(transfers, [Retr, Stor, Stou, Appe, List, Nlst, Mlsd]);
        assert!(!Other.is_transfer());
    }

    #[test]
    fn transfer_direction_names() {
        assert_eq!(TransferDirection::Download.as_str(), "download");
        assert_eq!(TransferDirection::Upload.as_str(), "upload");
        assert_eq!(TransferDirection::Listing.as_str(), "listing");
    }
}
