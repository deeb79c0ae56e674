import Testing

@testable import KilnCore

@Suite struct OutboundGuardTests {
    let guardDefault = OutboundGuard()

    /// Every spelling of an address the C library accepts is the same address to the guard.
    @Test func ipv4SpellingsAreOneAddress() {
        for spelling in [
            "127.0.0.1", "2130706433", "0x7f000001", "017700000001", "0177.0.0.1", "0x7f.0.0.1", "0x7f.1", "127.1",
            "127.0.1", "0177.1",
        ] {
            #expect(IPAddress(spelling)?.description == "127.0.0.1", "\(spelling)")
            #expect(guardDefault.refusal(IPAddress(spelling)!) != nil, "\(spelling)")
        }
        #expect(IPAddress("10.1")?.description == "10.0.0.1")
        #expect(IPAddress("0")?.description == "0.0.0.0")
        #expect(IPAddress("3232235777")?.description == "192.168.1.1")
        #expect(IPAddress("0xa9.0xfe.0xa9.0xfe")?.description == "169.254.169.254")
        for bad in ["", "1.2.3.4.5", "256.1.1.1", "example.com", "1.2.3.4 ", "::g", "[::1", "1.2.3.4/8"] {
            #expect(IPAddress(bad) == nil, "\(bad)")
        }
    }

    @Test func privateLoopbackLinkLocalAndMetadataAreRefused() {
        for address in [
            "127.0.0.1", "10.0.0.5", "172.16.3.4", "172.31.255.255", "192.168.0.1", "169.254.169.254", "100.64.0.1",
            "0.0.0.0", "224.0.0.1", "255.255.255.255", "::1", "::", "[::1]", "fe80::1", "fe80::1%eth0", "fc00::1",
            "fd12:3456::1", "fd00:ec2::254", "ff02::1",
        ] {
            #expect(guardDefault.refusal(IPAddress(address)!) != nil, "\(address)")
        }
        for address in ["93.184.216.34", "8.8.8.8", "172.32.0.1", "2606:4700::1111", "1.1.1.1"] {
            #expect(guardDefault.refusal(IPAddress(address)!) == nil, "\(address)")
        }
    }

    @Test func ipv6FormsCarryingAPrivateIPv4AreRefused() {
        for address in [
            "::ffff:127.0.0.1", "::ffff:7f00:1", "::ffff:10.0.0.1", "::ffff:a9fe:a9fe", "::127.0.0.1",
            "64:ff9b::169.254.169.254", "2002:7f00:0001::", "0:0:0:0:0:ffff:192.168.1.1",
        ] {
            let ip = IPAddress(address)
            #expect(ip != nil, "\(address)")
            #expect(ip.map { guardDefault.refusal($0) != nil } == true, "\(address)")
        }
        #expect(guardDefault.refusal(IPAddress("::ffff:8.8.8.8")!) == nil)
    }

    @Test func allowedRangesAreReachable() throws {
        let g = OutboundGuard(allowed: [CIDR("127.0.0.0/8")!, CIDR("fd00::/8")!])
        #expect(g.refusal(IPAddress("127.0.0.1")!) == nil)
        #expect(g.refusal(IPAddress("::ffff:127.0.0.1")!) == nil)
        #expect(g.refusal(IPAddress("fd12::1")!) == nil)
        #expect(g.refusal(IPAddress("10.0.0.1")!) != nil)
        #expect(CIDR("10.0.0.0/33") == nil)
        #expect(CIDR("nonsense/8") == nil)
        #expect(CIDR("10.0.0.0/8")!.contains(IPAddress("10.255.1.2")!))
        #expect(!CIDR("10.0.0.0/8")!.contains(IPAddress("11.0.0.1")!))
    }

    /// A name is resolved once and every address it gives counts.
    @Test func aNameResolvingToAPrivateAddressIsRefused() throws {
        #expect(throws: OutboundGuard.Refused.self) { try guardDefault.resolve("localhost") }
        #expect(throws: OutboundGuard.Refused.self) { try guardDefault.resolve("0x7f.1") }
        #expect(throws: OutboundGuard.Refused.self) { try guardDefault.resolve("[::ffff:127.0.0.1]") }
        #expect(throws: OutboundGuard.Refused.self) { try guardDefault.resolve("no-such-host.invalid") }
        let allowed = OutboundGuard(allowed: [CIDR("127.0.0.0/8")!, CIDR("::1/128")!])
        let addresses = try allowed.resolve("localhost")
        #expect(!addresses.isEmpty)
        #expect(addresses.allSatisfy { $0.description == "127.0.0.1" || $0.description == "::1" })
        #expect(try guardDefault.resolve("8.8.8.8").map(\.description) == ["8.8.8.8"])
    }

    /// The lookup request handlers await (on a thread of its own) decides as `resolve` does.
    @Test func lookupDecidesAsResolve() async throws {
        await #expect(throws: OutboundGuard.Refused.self) { try await guardDefault.lookup("localhost") }
        await #expect(throws: OutboundGuard.Refused.self) { try await guardDefault.lookup("no-such-host.invalid") }
        await #expect(throws: OutboundGuard.Refused.self) { try await guardDefault.lookup("10.1.2.3") }
        let allowed = OutboundGuard(allowed: [CIDR("127.0.0.0/8")!, CIDR("::1/128")!])
        let addresses = try await allowed.lookup("localhost")
        #expect(!addresses.isEmpty && addresses.allSatisfy { $0.description == "127.0.0.1" || $0.description == "::1" })
        #expect(try await guardDefault.lookup("8.8.8.8").map(\.description) == ["8.8.8.8"])
    }

    @Test func theOptionTakesRangesAndRefusesNonsense() throws {
        let (c, _) = try Config.load(
            arguments: ["--allow-private-network", "10.0.0.0/8", "--allow-private-network=127.0.0.1"], environment: [:],
            options: Config.coreOptions)
        #expect(OutboundGuard(config: c).allowed.map(\.description) == ["10.0.0.0/8", "127.0.0.1/32"])
        let (e, _) = try Config.load(
            arguments: [], environment: ["KILN_ALLOW_PRIVATE_NETWORK": "10.0.0.0/8, 192.168.0.0/16"],
            options: Config.coreOptions)
        #expect(OutboundGuard(config: e).allowed.count == 2)
        #expect(throws: Config.ConfigError.self) {
            try Config.load(
                arguments: ["--allow-private-network", "example.com"], environment: [:], options: Config.coreOptions)
        }
    }
}
