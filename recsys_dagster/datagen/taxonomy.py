"""The marketplace's world: a 3-level category tree with brands, title parts and prices,
and the cities where sellers and buyers live. Plain data, no randomness."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from recsys_dagster.contract import CATEGORY_SEPARATOR


@dataclass(frozen=True)
class Leaf:
    """A leaf category and how its listings look.

    `products` are ordered old/cheap -> new/expensive, so the model name carries a price
    signal. A title is `template` filled with brand, product and one pick per variant list.
    """

    path: str
    brands: tuple[str, ...]
    products: tuple[str, ...]
    variants: tuple[tuple[str, ...], ...]
    median_price: float  # EUR, for a `like_new` item
    price_sigma: float = 0.5  # log-normal spread
    template: str = "{brand} {product} {variants}"
    bulky: bool = False  # pick-up only in practice: buyers prefer sellers close by

    @property
    def levels(self) -> tuple[str, str, str]:
        a, b, c = self.path.split(CATEGORY_SEPARATOR)
        return a, b, c


_STORAGE = ("64GB", "128GB", "256GB", "512GB")
_PHONE_COLORS = ("Black", "Blue", "Silver", "Gold", "Purple", "Green", "White")
_SIZES_EU = ("36", "37", "38", "39", "40", "41", "42", "43", "44", "45")
_SIZES = ("XS", "S", "M", "L", "XL")
_KID_SIZES = ("86", "92", "98", "104", "110", "116", "128", "140")
_COLORS = ("Black", "White", "Grey", "Blue", "Red", "Green", "Beige", "Brown")
_FRAME = ("S", "M", "L", "XL")

LEAVES: tuple[Leaf, ...] = (
    # Electronics
    Leaf(
        "Electronics > Phones > Apple",
        ("Apple",),
        (
            "iPhone 12",
            "iPhone 13",
            "iPhone 13 mini",
            "iPhone 14",
            "iPhone 14 Pro",
            "iPhone 15",
            "iPhone 15 Pro",
            "iPhone 15 Pro Max",
            "iPhone 16 Pro",
        ),
        (_STORAGE[1:], _PHONE_COLORS),
        520,
        0.4,
        "{product} {variants}",
    ),
    Leaf(
        "Electronics > Phones > Samsung",
        ("Samsung",),
        (
            "Galaxy A34",
            "Galaxy A54",
            "Galaxy S21",
            "Galaxy S22",
            "Galaxy S23",
            "Galaxy Z Flip5",
            "Galaxy S23 Ultra",
            "Galaxy S24 Ultra",
        ),
        (_STORAGE[1:], _PHONE_COLORS),
        340,
        0.45,
    ),
    Leaf(
        "Electronics > Phones > Google",
        ("Google",),
        ("Pixel 6a", "Pixel 7", "Pixel 7a", "Pixel 8", "Pixel 8 Pro", "Pixel 9 Pro"),
        (_STORAGE[1:3], ("Obsidian", "Porcelain", "Hazel", "Bay")),
        300,
        0.4,
    ),
    Leaf(
        "Electronics > Phones > Xiaomi",
        ("Xiaomi",),
        ("Redmi 12", "Redmi Note 12", "Redmi Note 13 Pro", "Poco F5", "Xiaomi 13T", "Xiaomi 14"),
        (_STORAGE[:3], ("Black", "Blue", "Mint", "White")),
        160,
        0.45,
    ),
    Leaf(
        "Electronics > Laptops > Gaming",
        ("ASUS ROG", "Lenovo Legion", "MSI", "Acer Predator", "Razer"),
        ("RTX 3050 Laptop", "RTX 3060 Laptop", "RTX 4060 Laptop", "RTX 4070 Laptop", "RTX 4080 Laptop"),
        (("16GB RAM", "32GB RAM"), ("15.6 inch", "17.3 inch")),
        950,
        0.4,
    ),
    Leaf(
        "Electronics > Laptops > Ultrabooks",
        ("Dell XPS", "Lenovo ThinkPad", "HP Spectre", "ASUS Zenbook"),
        ("13", "14", "15"),
        (("i5", "i7", "Ryzen 7"), ("8GB", "16GB", "32GB")),
        620,
        0.45,
    ),
    Leaf(
        "Electronics > Laptops > MacBooks",
        ("Apple",),
        ("MacBook Air M1", "MacBook Air M2", "MacBook Pro 14 M1 Pro", "MacBook Air M3", "MacBook Pro 14 M3"),
        (("8GB", "16GB", "24GB"), ("256GB", "512GB", "1TB"), ("Space Grey", "Silver", "Midnight")),
        900,
        0.35,
        "{product} {variants}",
    ),
    Leaf(
        "Electronics > Audio > Headphones",
        ("Sony", "Bose", "Apple", "Sennheiser", "JBL"),
        ("Wireless Earbuds", "On-Ear Headphones", "Noise Cancelling Headphones", "Studio Headphones"),
        (("Black", "White", "Silver", "Blue"),),
        110,
        0.6,
    ),
    Leaf(
        "Electronics > Audio > Speakers",
        ("JBL", "Sonos", "Bose", "Marshall", "Teufel"),
        ("Portable Speaker", "Bluetooth Speaker", "Smart Speaker", "Soundbar", "Bookshelf Speakers"),
        (("Black", "White", "Red", "Blue"),),
        95,
        0.65,
    ),
    Leaf(
        "Electronics > Gaming > Consoles",
        ("Sony", "Nintendo", "Microsoft", "Valve"),
        (
            "Nintendo Switch Lite",
            "Xbox Series S",
            "Nintendo Switch OLED",
            "PlayStation 5 Digital",
            "Steam Deck",
            "PlayStation 5",
        ),
        (("with 2 controllers", "with 3 games", "boxed", "bundle"),),
        280,
        0.4,
        "{product} {variants}",
    ),
    Leaf(
        "Electronics > Gaming > Video Games",
        ("Nintendo", "Sony", "EA", "Ubisoft", "Rockstar"),
        ("FIFA 23", "Mario Kart 8", "Zelda Tears of the Kingdom", "Elden Ring", "GTA V", "Hogwarts Legacy"),
        (("PS5", "PS4", "Switch", "Xbox"),),
        25,
        0.5,
        "{product} {variants}",
    ),
    Leaf(
        "Electronics > Cameras > Mirrorless",
        ("Sony", "Canon", "Nikon", "Fujifilm"),
        ("Alpha 6000", "EOS RP", "Z50", "X-T30", "Alpha 7 III", "EOS R6"),
        (("body only", "with kit lens", "with 2 lenses"),),
        720,
        0.45,
    ),
    Leaf(
        "Electronics > Cameras > Lenses",
        ("Sigma", "Tamron", "Sony", "Canon", "Nikon"),
        ("35mm f1.8", "50mm f1.4", "18-55mm", "24-70mm f2.8", "70-200mm f4"),
        (("E-mount", "RF", "Z", "EF"),),
        350,
        0.6,
    ),
    # Fashion
    Leaf(
        "Fashion > Women > Dresses",
        ("Zara", "H&M", "Mango", "COS", "Reformation"),
        ("Summer Dress", "Midi Dress", "Maxi Dress", "Wrap Dress", "Evening Dress"),
        (_SIZES, _COLORS),
        28,
        0.6,
    ),
    Leaf(
        "Fashion > Women > Shoes",
        ("Nike", "Adidas", "Dr. Martens", "Birkenstock", "Zara"),
        ("Sneakers", "Ankle Boots", "Sandals", "Heels", "Loafers"),
        (tuple("EU " + s for s in _SIZES_EU[:7]), _COLORS[:4]),
        45,
        0.6,
    ),
    Leaf(
        "Fashion > Women > Bags",
        ("Michael Kors", "Longchamp", "Coach", "Fjallraven", "Mango"),
        ("Tote Bag", "Crossbody Bag", "Backpack", "Shoulder Bag", "Clutch"),
        (_COLORS,),
        65,
        0.7,
    ),
    Leaf(
        "Fashion > Women > Jackets",
        ("The North Face", "Zara", "Levi's", "Patagonia", "Mango"),
        ("Puffer Jacket", "Denim Jacket", "Trench Coat", "Wool Coat", "Rain Jacket"),
        (_SIZES, _COLORS),
        55,
        0.6,
    ),
    Leaf(
        "Fashion > Men > Sneakers",
        ("Nike", "Adidas", "New Balance", "Puma", "Vans"),
        ("Air Max 90", "Stan Smith", "574", "Samba", "Old Skool", "Air Force 1", "Jordan 1 Mid"),
        (tuple("EU " + s for s in _SIZES_EU[4:]), ("White", "Black", "Grey", "Navy")),
        70,
        0.55,
    ),
    Leaf(
        "Fashion > Men > Jackets",
        ("The North Face", "Patagonia", "Barbour", "Levi's", "Jack Wolfskin"),
        ("Fleece Jacket", "Down Jacket", "Waxed Jacket", "Denim Jacket", "Softshell Jacket"),
        (_SIZES[1:], _COLORS[:5]),
        70,
        0.6,
    ),
    Leaf(
        "Fashion > Men > Watches",
        ("Casio", "Seiko", "Tissot", "Garmin", "Fossil"),
        ("G-Shock", "Automatic Watch", "Chronograph", "Smartwatch", "Diver Watch"),
        (("Steel", "Leather strap", "Black"),),
        140,
        0.8,
    ),
    Leaf(
        "Fashion > Men > Shirts",
        ("Ralph Lauren", "Tommy Hilfiger", "Uniqlo", "Hugo Boss", "H&M"),
        ("Oxford Shirt", "Linen Shirt", "Flannel Shirt", "Polo Shirt"),
        (_SIZES[1:], _COLORS[:6]),
        22,
        0.55,
    ),
    # Home
    Leaf(
        "Home > Furniture > Sofas",
        ("IKEA", "BoConcept", "Made.com", "Home24"),
        ("2-Seater Sofa", "3-Seater Sofa", "Corner Sofa", "Sofa Bed", "Armchair"),
        (("Grey", "Beige", "Green", "Blue", "Leather Brown"),),
        260,
        0.7,
        bulky=True,
    ),
    Leaf(
        "Home > Furniture > Tables",
        ("IKEA", "Hay", "Muji", "Home24"),
        ("Dining Table", "Coffee Table", "Desk", "Side Table", "Extendable Table"),
        (("Oak", "Walnut", "White", "Black"),),
        120,
        0.7,
        bulky=True,
    ),
    Leaf(
        "Home > Furniture > Chairs",
        ("IKEA", "Vitra", "Hay", "Herman Miller"),
        ("Dining Chair", "Office Chair", "Bar Stool", "Lounge Chair"),
        (("Oak", "Black", "White", "Grey"), ("single", "set of 2", "set of 4")),
        45,
        0.9,
        bulky=True,
    ),
    Leaf(
        "Home > Furniture > Beds",
        ("IKEA", "Emma", "Home24", "Muji"),
        ("Single Bed", "Double Bed", "Bunk Bed", "Box Spring Bed"),
        (("90x200", "140x200", "160x200", "180x200"),),
        190,
        0.7,
        bulky=True,
    ),
    Leaf(
        "Home > Kitchen > Appliances",
        ("De'Longhi", "KitchenAid", "Philips", "Bosch", "Nespresso"),
        ("Coffee Machine", "Stand Mixer", "Air Fryer", "Blender", "Espresso Machine"),
        (("Black", "Silver", "Red", "White"),),
        75,
        0.75,
    ),
    Leaf(
        "Home > Kitchen > Cookware",
        ("WMF", "Le Creuset", "Tefal", "Fissler", "IKEA"),
        ("Pan Set", "Dutch Oven", "Knife Set", "Pot Set", "Wok"),
        (("3 pieces", "5 pieces", "single"),),
        35,
        0.7,
    ),
    Leaf(
        "Home > Garden > Tools",
        ("Bosch", "Gardena", "Makita", "Stihl", "Einhell"),
        ("Lawn Mower", "Hedge Trimmer", "Pressure Washer", "Leaf Blower", "Chainsaw"),
        (("cordless", "electric", "petrol"),),
        90,
        0.7,
    ),
    Leaf(
        "Home > Garden > Outdoor Furniture",
        ("IKEA", "Kettler", "Weber", "Hartman"),
        ("Garden Lounge Set", "Garden Table", "Sun Lounger", "BBQ Grill", "Parasol"),
        (("Teak", "Aluminium", "Rattan", "Black"),),
        140,
        0.8,
        bulky=True,
    ),
    Leaf(
        "Home > Decor > Lamps",
        ("IKEA", "Louis Poulsen", "Philips Hue", "Flos", "Muuto"),
        ("Floor Lamp", "Table Lamp", "Pendant Lamp", "Desk Lamp"),
        (("White", "Black", "Brass", "Opal"),),
        45,
        0.9,
    ),
    Leaf(
        "Home > Decor > Rugs",
        ("IKEA", "Benuta", "Handmade", "Muuto"),
        ("Berber Rug", "Wool Rug", "Persian Rug", "Runner Rug"),
        (("160x230", "200x300", "80x150", "120x170"),),
        70,
        0.8,
    ),
    # Vehicles
    Leaf(
        "Vehicles > Bikes > Road",
        ("Canyon", "Specialized", "Trek", "Cube", "Giant"),
        ("Endurace", "Allez", "Domane", "Attain", "TCR", "Ultimate CF"),
        (tuple("frame " + s for s in _FRAME), ("105", "Ultegra", "Tiagra", "Rival")),
        850,
        0.5,
        bulky=True,
    ),
    Leaf(
        "Vehicles > Bikes > Mountain",
        ("Canyon", "Specialized", "Trek", "Cube", "Scott"),
        ("Hardtail", "Trail Bike", "Enduro Bike", "Full Suspension"),
        (tuple("frame " + s for s in _FRAME), ("29 inch", "27.5 inch")),
        650,
        0.55,
        bulky=True,
    ),
    Leaf(
        "Vehicles > Bikes > E-Bikes",
        ("Cube", "VanMoof", "Riese & Muller", "Gazelle", "Haibike"),
        ("City E-Bike", "Trekking E-Bike", "E-MTB", "Cargo E-Bike"),
        (("500Wh", "625Wh", "750Wh"), tuple("frame " + s for s in _FRAME)),
        1500,
        0.5,
        bulky=True,
    ),
    Leaf(
        "Vehicles > Bikes > City",
        ("Gazelle", "Batavus", "Pegasus", "Kalkhoff"),
        ("City Bike", "Dutch Bike", "Folding Bike", "Fixie"),
        (("3 gears", "7 gears", "single speed"), _COLORS[:5]),
        230,
        0.55,
        bulky=True,
    ),
    Leaf(
        "Vehicles > Cars > Hatchbacks",
        ("Volkswagen", "Opel", "Ford", "Renault", "Toyota"),
        ("Polo", "Corsa", "Fiesta", "Clio", "Golf", "Yaris Hybrid"),
        (("2012", "2014", "2016", "2018", "2020"), ("petrol", "diesel", "hybrid")),
        8500,
        0.55,
        bulky=True,
    ),
    Leaf(
        "Vehicles > Cars > SUVs",
        ("Volkswagen", "BMW", "Kia", "Hyundai", "Skoda"),
        ("Tiguan", "X1", "Sportage", "Tucson", "Kodiaq", "X3"),
        (("2015", "2017", "2019", "2021"), ("petrol", "diesel", "hybrid")),
        17000,
        0.5,
        bulky=True,
    ),
    Leaf(
        "Vehicles > Motorcycles > Scooters",
        ("Vespa", "Piaggio", "Honda", "Niu", "Yamaha"),
        ("Primavera 50", "Liberty 125", "PCX 125", "NQi GT", "NMAX 125"),
        (("2016", "2018", "2020", "2022"),),
        1800,
        0.5,
        bulky=True,
    ),
    Leaf(
        "Vehicles > Motorcycles > Touring",
        ("BMW", "Honda", "Yamaha", "Kawasaki", "Triumph"),
        ("R 1200 GS", "Africa Twin", "Tracer 9", "Versys 650", "Tiger 900"),
        (("2014", "2017", "2019", "2021"),),
        8000,
        0.45,
        bulky=True,
    ),
    # Sports
    Leaf(
        "Sports > Fitness > Weights",
        ("Bowflex", "Gorilla Sports", "Domyos", "Kettler"),
        ("Adjustable Dumbbells", "Kettlebell", "Barbell Set", "Weight Bench"),
        (("10kg", "20kg", "40kg", "60kg"),),
        70,
        0.7,
        bulky=True,
    ),
    Leaf(
        "Sports > Fitness > Treadmills",
        ("Kettler", "NordicTrack", "Horizon", "Sportstech"),
        ("Folding Treadmill", "Treadmill", "Rowing Machine", "Exercise Bike"),
        (("foldable", "with app", "compact"),),
        380,
        0.55,
        bulky=True,
    ),
    Leaf(
        "Sports > Outdoor > Tents",
        ("Vaude", "MSR", "Coleman", "Decathlon", "Hilleberg"),
        ("2-Person Tent", "3-Person Tent", "Family Tent", "Ultralight Tent"),
        (("green", "orange", "grey"),),
        110,
        0.7,
    ),
    Leaf(
        "Sports > Outdoor > Hiking Boots",
        ("Salomon", "Lowa", "Meindl", "Merrell", "Hanwag"),
        ("Hiking Boots", "Trail Shoes", "Mountaineering Boots"),
        (tuple("EU " + s for s in _SIZES_EU), ("GTX", "mid", "low")),
        65,
        0.5,
    ),
    Leaf(
        "Sports > Winter > Skis",
        ("Atomic", "Rossignol", "Salomon", "Head", "Volkl"),
        ("All-Mountain Skis", "Freeride Skis", "Carving Skis", "Touring Skis"),
        (("156cm", "163cm", "170cm", "177cm", "184cm"), ("with bindings", "skis only")),
        210,
        0.55,
    ),
    Leaf(
        "Sports > Winter > Snowboards",
        ("Burton", "Nitro", "Salomon", "Jones", "K2"),
        ("Snowboard", "Splitboard", "Snowboard Boots", "Snowboard Bindings"),
        (("148cm", "152cm", "156cm", "160cm"),),
        170,
        0.6,
    ),
    Leaf(
        "Sports > Ball Sports > Football",
        ("Adidas", "Nike", "Puma", "Select"),
        ("Football Boots", "Match Ball", "Goalkeeper Gloves", "Club Jersey"),
        (_SIZES[1:],),
        25,
        0.6,
    ),
    Leaf(
        "Sports > Ball Sports > Tennis",
        ("Wilson", "Babolat", "Head", "Yonex"),
        ("Tennis Racket", "Racket Bag", "Tennis Shoes", "Ball Machine"),
        (("L2", "L3", "L4"),),
        55,
        0.6,
    ),
    # Kids
    Leaf(
        "Kids > Toys > LEGO",
        ("LEGO",),
        ("Technic", "Star Wars", "City", "Friends", "Harry Potter", "Creator Expert"),
        (("set complete", "boxed", "with manual", "sealed"),),
        45,
        0.8,
        "{brand} {product} {variants}",
    ),
    Leaf(
        "Kids > Toys > Dolls",
        ("Barbie", "Playmobil", "Schleich", "Baby Born"),
        ("Doll House", "Doll", "Play Set", "Figures Bundle"),
        (("boxed", "complete", "bundle"),),
        22,
        0.7,
    ),
    Leaf(
        "Kids > Toys > Board Games",
        ("Ravensburger", "Kosmos", "Hasbro", "Asmodee"),
        ("Catan", "Carcassonne", "Ticket to Ride", "Monopoly", "Puzzle 1000"),
        (("complete", "sealed", "German edition", "English edition"),),
        18,
        0.5,
    ),
    Leaf(
        "Kids > Baby > Strollers",
        ("Bugaboo", "Joolz", "Cybex", "Babyzen", "Hauck"),
        ("Fox", "Day+", "Priam", "YOYO2", "Balios S"),
        (("Black", "Grey", "Navy", "Beige"),),
        260,
        0.6,
        bulky=True,
    ),
    Leaf(
        "Kids > Baby > Car Seats",
        ("Maxi-Cosi", "Cybex", "Britax Romer", "Joie"),
        ("Pebble 360", "Sirona", "Dualfix", "i-Spin 360", "Solution"),
        (("Isofix", "with base", "0-4 years"),),
        95,
        0.55,
    ),
    Leaf(
        "Kids > Clothing > Girls",
        ("H&M", "Zara Kids", "Petit Bateau", "Mini Boden"),
        ("Dress", "Winter Jacket", "Clothing Bundle", "Rain Suit"),
        (tuple("size " + s for s in _KID_SIZES),),
        15,
        0.6,
    ),
    Leaf(
        "Kids > Clothing > Boys",
        ("H&M", "Zara Kids", "Name It", "Jako-o"),
        ("Hoodie", "Winter Jacket", "Clothing Bundle", "Snow Pants"),
        (tuple("size " + s for s in _KID_SIZES),),
        15,
        0.6,
    ),
    # Hobbies
    Leaf(
        "Hobbies > Music > Guitars",
        ("Fender", "Gibson", "Yamaha", "Ibanez", "Epiphone"),
        ("Stratocaster", "Les Paul", "Acoustic Guitar", "Telecaster", "Bass Guitar"),
        (("Sunburst", "Black", "Natural", "White"),),
        320,
        0.75,
    ),
    Leaf(
        "Hobbies > Music > Keyboards",
        ("Yamaha", "Roland", "Korg", "Casio", "Nord"),
        ("Digital Piano", "Stage Piano", "Synthesizer", "MIDI Keyboard"),
        (("61 keys", "88 keys", "49 keys"),),
        260,
        0.75,
    ),
    Leaf(
        "Hobbies > Books > Fiction",
        ("Penguin", "Diogenes", "Fischer", "Suhrkamp", "Vintage"),
        ("Novel", "Crime Novel", "Fantasy Series", "Classic", "Book Bundle"),
        (("hardcover", "paperback", "set of 5"),),
        8,
        0.6,
    ),
    Leaf(
        "Hobbies > Books > Comics",
        ("Marvel", "DC", "Carlsen", "Egmont"),
        ("Manga Volume", "Graphic Novel", "Comic Collection", "Asterix Set"),
        (("vol. 1-5", "single", "first edition"),),
        12,
        0.7,
    ),
    Leaf(
        "Hobbies > Collectibles > Trading Cards",
        ("Pokemon", "Magic The Gathering", "Panini", "Yu-Gi-Oh"),
        ("Booster Box", "Card Collection", "Rare Card", "Sticker Album"),
        (("sealed", "graded", "complete"),),
        30,
        1.0,
    ),
    Leaf(
        "Hobbies > Collectibles > Vinyl",
        ("Pink Floyd", "The Beatles", "Daft Punk", "Fleetwood Mac", "Queen"),
        ("LP", "Vinyl Box Set", "Record Collection", "Picture Disc"),
        (("first pressing", "reissue", "limited edition"),),
        22,
        0.8,
    ),
)

# Relative listing volume and buyer interest per top-level category.
L1_WEIGHT: dict[str, float] = {
    "Electronics": 1.6,
    "Fashion": 1.5,
    "Home": 1.1,
    "Vehicles": 0.6,
    "Sports": 0.8,
    "Kids": 0.9,
    "Hobbies": 0.7,
}


@dataclass(frozen=True)
class City:
    name: str
    lat: float
    lon: float
    population_m: float


CITIES: tuple[City, ...] = (
    City("Berlin", 52.52, 13.40, 3.7),
    City("Hamburg", 53.55, 9.99, 1.9),
    City("Munich", 48.14, 11.58, 1.5),
    City("Cologne", 50.94, 6.96, 1.1),
    City("Frankfurt", 50.11, 8.68, 0.77),
    City("Stuttgart", 48.78, 9.18, 0.63),
    City("Dusseldorf", 51.23, 6.77, 0.62),
    City("Leipzig", 51.34, 12.37, 0.6),
    City("Dresden", 51.05, 13.74, 0.56),
    City("Hanover", 52.38, 9.73, 0.54),
    City("Nuremberg", 49.45, 11.08, 0.52),
    City("Bremen", 53.08, 8.80, 0.57),
    City("Vienna", 48.21, 16.37, 1.9),
    City("Graz", 47.07, 15.44, 0.29),
    City("Amsterdam", 52.37, 4.90, 0.92),
    City("Rotterdam", 51.92, 4.48, 0.65),
)

NEARBY_KM = 250.0


def leaf_weights() -> np.ndarray:
    """Listing volume / interest share per leaf (sums to 1)."""
    w = np.array([L1_WEIGHT[leaf.levels[0]] for leaf in LEAVES], dtype=np.float64)
    return w / w.sum()


def subtree_ids() -> np.ndarray:
    """Index of each leaf's level-2 parent (e.g. `Electronics > Phones`)."""
    parents: dict[str, int] = {}
    return np.array(
        [parents.setdefault(CATEGORY_SEPARATOR.join(leaf.levels[:2]), len(parents)) for leaf in LEAVES],
        dtype=np.int64,
    )


def city_weights() -> np.ndarray:
    w = np.array([c.population_m for c in CITIES], dtype=np.float64)
    return w / w.sum()


def city_distance_km() -> np.ndarray:
    """Great-circle distances between cities, [n_cities, n_cities]."""
    lat = np.radians([c.lat for c in CITIES])
    lon = np.radians([c.lon for c in CITIES])
    dlat = lat[:, None] - lat[None, :]
    dlon = lon[:, None] - lon[None, :]
    a = np.sin(dlat / 2) ** 2 + np.cos(lat[:, None]) * np.cos(lat[None, :]) * np.sin(dlon / 2) ** 2
    return 2 * 6371.0 * np.arcsin(np.sqrt(np.clip(a, 0.0, 1.0)))
