package textfmt

import "testing"

func TestUnits(t *testing.T) {
	tests := []struct {
		got, want string
	}{
		{Bytes(0), "0 B"},
		{Bytes(1023), "1023 B"},
		{Bytes(1024), "1.0 KiB"},
		{Bytes(1536), "1.5 KiB"},
		{Bytes(5 << 20), "5.0 MiB"},
		{Bytes(3 << 30), "3.0 GiB"},
		{Bytes(2 << 40), "2.0 TiB"},
		{Bytes(2048 << 40), "2048.0 TiB"},
		{BitRate(0), "0 bit/s"},
		{BitRate(999), "999 bit/s"},
		{BitRate(12.5), "12.5 bit/s"},
		{BitRate(1000), "1.00 kbit/s"},
		{BitRate(1_234_567), "1.23 Mbit/s"},
		{BitRate(45_600_000), "45.6 Mbit/s"},
		{BitRate(999_600_000), "1.00 Gbit/s"},
		{BitRate(250e9), "250 Gbit/s"},
		{PacketRate(200), "200 pkt/s"},
		{PacketRate(0.5), "0.50 pkt/s"},
		{PacketRate(14_880_000), "14.9 Mpkt/s"},
	}
	for _, tt := range tests {
		if tt.got != tt.want {
			t.Errorf("got %q, want %q", tt.got, tt.want)
		}
	}
}
