import Foundation
import Testing

@testable import KilnCrypto

func h(_ s: String) -> [UInt8] { Crypto.fromHex(s)! }

@Suite struct KnownAnswerTests {
    @Test func sha256() {
        #expect(
            Crypto.hex(Crypto.sha256(Array("abc".utf8)))
                == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad")
        #expect(Crypto.hex(Crypto.sha256([])) == "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855")
        #expect(
            Crypto.sha256Hex(Array("abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq".utf8))
                == "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1")
    }

    // Values from the reference implementation (python's xxhash 3.x), seeds 0 and 0x9E3779B97F4A7C15:
    // empty, shorter than one word, a tail after the 32-byte stripes, and several stripes.
    @Test func xxh64() {
        let long = Array(repeating: Array(0...255) as [UInt8], count: 3).flatMap { $0 }
        let mixed = Array(String(repeating: "0123456789abcdef", count: 4).utf8) + Array("xyz".utf8)
        let cases: [([UInt8], UInt64, UInt64)] = [
            ([], 0xef46db3751d8e999, 0xc4349fc93c010000), (Array("a".utf8), 0xd24ec4f1a98c6e5b, 0x9a7c6d2ea45568c9),
            (Array("abc".utf8), 0x44bc2cf5ad770999, 0x2ed0f59d6b43ac8b),
            (mixed, 0x98ad8ff4ba176c8f, 0xb4ed7009cb4b6632),
            (long, 0x8e03c838c596036f, 0x919e1c789d522e91),
        ]
        for (input, zero, seeded) in cases {
            #expect(XXH64.hash(input) == zero, "length \(input.count)")
            #expect(XXH64.hash(input, seed: 0x9E37_79B9_7F4A_7C15) == seeded, "length \(input.count)")
        }
        // Always 16 digits: the rescan stores hashes in this form and compares them as text.
        #expect(XXH64.hex(0xef46db3751d8e999) == "ef46db3751d8e999")
        #expect(XXH64.hex(0xab) == "00000000000000ab")
    }

    // RFC 4231 test cases 1, 2 and 6.
    @Test func hmacSHA256() {
        #expect(
            Crypto.hex(Crypto.hmacSHA256(key: [UInt8](repeating: 0x0b, count: 20), data: Array("Hi There".utf8)))
                == "b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7")
        #expect(
            Crypto.hex(Crypto.hmacSHA256(key: Array("Jefe".utf8), data: Array("what do ya want for nothing?".utf8)))
                == "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843")
        #expect(
            Crypto.hex(
                Crypto.hmacSHA256(
                    key: [UInt8](repeating: 0xaa, count: 131),
                    data: Array("Test Using Larger Than Block-Size Key - Hash Key First".utf8)))
                == "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54")
    }

    // The GCM specification's test cases 13, 14 and 16 (AES-256).
    @Test func aes256gcm() {
        var out: [UInt8] = []
        var tag: [UInt8] = []
        #expect(
            Crypto.aesGCM(
                encrypt: true, key: [UInt8](repeating: 0, count: 32), iv: [UInt8](repeating: 0, count: 12), aad: [],
                input: [], output: &out, tag: &tag))
        #expect(Crypto.hex(tag) == "530f8afbc74536b9a963b4f1c4cb738b")
        #expect(
            Crypto.aesGCM(
                encrypt: true, key: [UInt8](repeating: 0, count: 32), iv: [UInt8](repeating: 0, count: 12), aad: [],
                input: [UInt8](repeating: 0, count: 16), output: &out, tag: &tag))
        #expect(Crypto.hex(out) == "cea7403d4d606b6e074ec5d3baf39d18")
        #expect(Crypto.hex(tag) == "d0d1c8a799996bf0265b98b5d48ab919")
        let key = h("feffe9928665731c6d6a8f9467308308feffe9928665731c6d6a8f9467308308")
        let iv = h("cafebabefacedbaddecaf888")
        let p = h(
            "d9313225f88406e5a55909c5aff5269a86a7a9531534f7da2e4c303d8a318a721c3c0c95956809532fcf0e2449a6b525b16aedf5aa0de657ba637b39"
        )
        let a = h("feedfacedeadbeeffeedfacedeadbeefabaddad2")
        #expect(Crypto.aesGCM(encrypt: true, key: key, iv: iv, aad: a, input: p, output: &out, tag: &tag))
        #expect(
            Crypto.hex(out)
                == "522dc1f099567d07f47f37a32a84427d643a8cdcbfe5c0c97598a2bd2555d1aa8cb08e48590dbb3da7b08b1056828838c5f61e6393ba7a0abcc9f662"
        )
        #expect(Crypto.hex(tag) == "76fc6ece0f4e1768cddf8853bb2d551b")
        // Decrypts with the right tag, refuses a wrong one.
        var back: [UInt8] = []
        var goodTag = tag
        #expect(Crypto.aesGCM(encrypt: false, key: key, iv: iv, aad: a, input: out, output: &back, tag: &goodTag))
        #expect(back == p)
        var badTag = tag
        badTag[0] ^= 1
        #expect(!Crypto.aesGCM(encrypt: false, key: key, iv: iv, aad: a, input: out, output: &back, tag: &badTag))
    }

    @Test func sealedBoxRoundTripAndTamper() throws {
        let key = Crypto.randomBytes(32)
        let box = try Crypto.seal(Array("secret value".utf8), key: key, aad: Array("ws_1".utf8))
        #expect(try Crypto.open(box, key: key, aad: Array("ws_1".utf8)) == Array("secret value".utf8))
        #expect(throws: Crypto.Failure.authenticationFailed) { try Crypto.open(box, key: key, aad: Array("ws_2".utf8)) }
        var tampered = box
        tampered[14] ^= 0x80
        #expect(throws: Crypto.Failure.authenticationFailed) {
            try Crypto.open(tampered, key: key, aad: Array("ws_1".utf8))
        }
        #expect(throws: Crypto.Failure.authenticationFailed) {
            try Crypto.open(box, key: Crypto.randomBytes(32), aad: Array("ws_1".utf8))
        }
    }

    // RFC 7914 §12.
    @Test func scrypt() throws {
        #expect(
            Crypto.hex(try Crypto.scrypt(password: [], salt: [], n: 16, r: 1, p: 1, length: 64))
                == "77d6576238657b203b19ca42c18a0497f16b4844e3074ae8dfdffa3fede21442fcd0069ded0948f8326a753a0fc81f17e8d3e0fb2e0d3628cf35e20c38d18906"
        )
        #expect(
            Crypto.hex(
                try Crypto.scrypt(
                    password: Array("password".utf8), salt: Array("NaCl".utf8), n: 1024, r: 8, p: 16, length: 64))
                == "fdbabe1c9d3472007856e7190d01e9fe7c6ad7cbc8237830e77376634b3731622eaf30d92e22a3886ff109279d9830dac727afb94a83ee6d8360cbdfa2cc0640"
        )
    }

    /// Password hashes made and checked on the hashing threads, several at once: each salted, each
    /// matching only its own password, and never more running together than the queue allows.
    @Test func passwordHashesOffThePool() async throws {
        let passwords = (0..<4).map { "password number \($0)" }
        let hashes = try await withThrowingTaskGroup(of: (Int, String).self) { group in
            for (i, p) in passwords.enumerated() { group.addTask { (i, try await PasswordHash.hashed(p)) } }
            return try await group.reduce(into: [Int: String]()) { $0[$1.0] = $1.1 }
        }
        #expect(Set(hashes.values).count == 4 && hashes.values.allSatisfy { $0.hasPrefix("scrypt$15$8$1$") })
        for (i, p) in passwords.enumerated() {
            #expect(await PasswordHash.matches(p, against: hashes[i]!))
            #expect(await !PasswordHash.matches(p, against: hashes[(i + 1) % 4]!))
        }
        #expect(await !PasswordHash.matches("x", against: "scrypt$99$8$1$AA$AA"), "parameters out of range")
        let width = PasswordHash.hashing.maxConcurrentOperationCount
        #expect(width >= 1 && width <= max(1, ProcessInfo.processInfo.activeProcessorCount / 2))
    }

    // RFC 8032 §7.1 tests 1 and 2.
    @Test func ed25519() throws {
        let k1 = try Ed25519Key(seed: h("9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60"))
        #expect(Crypto.hex(k1.publicKey) == "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a")
        let sig1 = k1.sign([])
        #expect(
            Crypto.hex(sig1)
                == "e5564300c360ac729086e2cc806e828a84877f1eb8e5d974d873e065224901555fb8821590a33bacc61e39701cf9b46bd25bf5f0595bbe24655141438e7a100b"
        )
        #expect(Ed25519Key.verify(publicKey: k1.publicKey, message: [], signature: sig1))
        let k2 = try Ed25519Key(seed: h("4ccd089b28ff96da9db6c346ec114e0f5b8a319f35aba624da8cf6ed4fb8a6fb"))
        #expect(Crypto.hex(k2.publicKey) == "3d4017c3e843895a92b70aa74d1b7ebc9c982ccf2ec4968cc0cd55f12af4660c")
        let sig2 = k2.sign([0x72])
        #expect(
            Crypto.hex(sig2)
                == "92a009a9f0d4cab8720e820b5f642540a2b27b5416503f8fb3762223ebdb69da085ac1e43e15996e458f3613d0f11d8c387b2eaeb4302aeeb00d291612bb0c00"
        )
        #expect(!Ed25519Key.verify(publicKey: k2.publicKey, message: [0x73], signature: sig2))
        #expect(!Ed25519Key.verify(publicKey: k1.publicKey, message: [0x72], signature: sig2))
    }

    // RFC 6238 appendix B (SHA-1, 8 digits, secret "12345678901234567890").
    @Test(arguments: [
        (59.0, "94287082"), (1111111109, "07081804"), (1111111111, "14050471"), (1234567890, "89005924"),
        (2000000000, "69279037"), (20000000000, "65353130"),
    ])
    func totp(_ time: Double, _ code: String) {
        #expect(TOTP.code(secret: Array("12345678901234567890".utf8), time: time, digits: 8) == code)
    }

    @Test func totpSixDigitsFromBase32Secret() throws {
        let secret = try #require(Base32.decode("GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ"))
        #expect(secret == Array("12345678901234567890".utf8))
        #expect(TOTP.code(secret: secret, time: 59) == "287082")
    }

    // RFC 4648 §10.
    @Test func base32() {
        let vectors = [
            ("", ""), ("f", "MY======"), ("fo", "MZXQ===="), ("foo", "MZXW6==="), ("foob", "MZXW6YQ="),
            ("fooba", "MZXW6YTB"), ("foobar", "MZXW6YTBOI======"),
        ]
        for (plain, encoded) in vectors {
            #expect(Base32.encode(Array(plain.utf8), padding: true) == encoded)
            #expect(Base32.decode(encoded) == Array(plain.utf8))
            #expect(Base32.decode(encoded.lowercased()) == Array(plain.utf8))
        }
        #expect(Base32.decode("MZ1W") == nil)
    }

    @Test func base64url() {
        let vectors = [
            ("", ""), ("f", "Zg"), ("fo", "Zm8"), ("foo", "Zm9v"), ("foob", "Zm9vYg"), ("fooba", "Zm9vYmE"),
            ("foobar", "Zm9vYmFy"),
        ]
        for (plain, encoded) in vectors {
            #expect(Base64URL.encode(Array(plain.utf8)) == encoded)
            #expect(Base64URL.decode(encoded) == Array(plain.utf8))
        }
        #expect(Base64URL.encode([0xfb, 0xff]) == "-_8")
        #expect(Base64URL.decode("-_8") == [0xfb, 0xff])
        #expect(Base64URL.decode("a") == nil)
        #expect(Base64URL.decode("ab$c") == nil)
    }

    @Test func constantTimeCompare() {
        #expect(Crypto.constantTimeEqual([1, 2, 3], [1, 2, 3]))
        #expect(!Crypto.constantTimeEqual([1, 2, 3], [1, 2, 4]))
        #expect(!Crypto.constantTimeEqual([1, 2, 3], [1, 2]))
        #expect(Crypto.constantTimeEqual([], []))
    }

    @Test func randomBytesDiffer() {
        #expect(Crypto.randomBytes(32) != Crypto.randomBytes(32))
        #expect(Crypto.randomBytes(0).isEmpty)
    }
}
