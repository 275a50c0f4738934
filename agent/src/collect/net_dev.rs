//! Network interface counters from `/proc/net/dev`: every interface's totals in one read.
//! (sysinfo's `Networks` opens nine `/sys/class/net` files per interface and asks netlink
//! for the addresses every round; the kernel fills both files from the same counters.)

use std::path::Path;

/// Where the kernel lists the interfaces of this network namespace with their counters.
pub const PROC_NET_DEV: &str = "/proc/net/dev";

/// One direction's totals of an interface since it came up.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Totals {
    pub bytes: u64,
    pub packets: u64,
    pub errors: u64,
}

/// One interface's line of `/proc/net/dev`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Interface {
    pub name: String,
    pub received: Totals,
    pub transmitted: Totals,
}

/// Reads and parses `path` (normally [`PROC_NET_DEV`]).
pub fn read(path: &Path) -> Result<Vec<Interface>, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    parse(&text).map_err(|e| format!("{}: {e}", path.display()))
}

/// Parses the file's text: two header lines, then `NAME: ` and eight receive and eight
/// transmit columns (bytes, packets, errs, drop, fifo, frame/colls, compressed,
/// multicast/carrier) per interface.
pub fn parse(text: &str) -> Result<Vec<Interface>, String> {
    text.lines()
        .skip(2)
        .filter(|line| !line.trim().is_empty())
        .map(|line| {
            let (name, columns) = line
                .split_once(':')
                .ok_or_else(|| format!("a line without `NAME:`: {line:?}"))?;
            let numbers = columns
                .split_ascii_whitespace()
                .map(str::parse::<u64>)
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| format!("a counter that is not a number ({e}): {line:?}"))?;
            if numbers.len() < 16 {
                return Err(format!(
                    "{} counters where 16 were expected: {line:?}",
                    numbers.len()
                ));
            }
            let totals = |at: usize| Totals {
                bytes: numbers[at],
                packets: numbers[at + 1],
                errors: numbers[at + 2],
            };
            Ok(Interface {
                name: name.trim().to_owned(),
                received: totals(0),
                transmitted: totals(8),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = "\
Inter-|   Receive                                                |  Transmit
 face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs drop fifo colls carrier compressed
    lo: 4455667      1234    0    0    0     0          0         0  4455667      1234    0    0    0     0       0          0
  eth0: 98765432101 76543    7    1    0     0          0        12 123456789   65432    3    0    0     0       0          0
";

    #[test]
    fn every_interface_with_bytes_packets_and_errors_per_direction() {
        let interfaces = parse(SAMPLE).unwrap();
        assert_eq!(interfaces.len(), 2);
        assert_eq!(interfaces[0].name, "lo");
        let eth0 = &interfaces[1];
        assert_eq!(eth0.name, "eth0");
        let received = Totals {
            bytes: 98_765_432_101,
            packets: 76_543,
            errors: 7,
        };
        let transmitted = Totals {
            bytes: 123_456_789,
            packets: 65_432,
            errors: 3,
        };
        assert_eq!((eth0.received, eth0.transmitted), (received, transmitted));
    }

    #[test]
    fn a_malformed_line_is_named() {
        let short = format!("{SAMPLE}  bad0: 1 2 3\n");
        let error = parse(&short).unwrap_err();
        assert!(
            error.contains("3 counters where 16") && error.contains("bad0"),
            "{error}"
        );
        let garbled = format!("{SAMPLE}  bad1: 1 x 3 4 5 6 7 8 9 10 11 12 13 14 15 16\n");
        assert!(parse(&garbled).unwrap_err().contains("not a number"));
        assert!(
            parse(&format!("{SAMPLE}no colon here\n"))
                .unwrap_err()
                .contains("NAME:")
        );
    }

    /// The interfaces this machine lists in /sys/class/net, each with the counters /sys
    /// shows (read before and after: the counters move while the test runs).
    #[test]
    fn this_machine_lists_what_sys_class_net_shows() {
        let sys = Path::new("/sys/class/net");
        let counter = |name: &str, file: &str| -> u64 {
            let path = sys.join(name).join("statistics").join(file);
            std::fs::read_to_string(&path)
                .unwrap()
                .trim()
                .parse()
                .unwrap()
        };
        let before = counter("lo", "rx_bytes");
        let interfaces = read(Path::new(PROC_NET_DEV)).unwrap();
        let after = counter("lo", "rx_bytes");

        let mut listed: Vec<String> = std::fs::read_dir(sys)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        listed.sort();
        let mut names: Vec<String> = interfaces.iter().map(|i| i.name.clone()).collect();
        names.sort();
        assert_eq!(names, listed);

        let lo = interfaces.iter().find(|i| i.name == "lo").unwrap();
        assert!(
            (before..=after).contains(&lo.received.bytes),
            "{before} <= {} <= {after}",
            lo.received.bytes
        );
        assert!(lo.received.errors <= counter("lo", "rx_errors"));
    }
}
